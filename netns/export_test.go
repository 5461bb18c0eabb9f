package netns

// InstallLoopbackRules lets the external tests apply the redirect again.
var InstallLoopbackRules = installLoopbackRules
