package kernelpath

// NamedRouteWrites is how many times a named address's route was written
// to the kernel.
func (p *Path) NamedRouteWrites() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.routeWrites
}
