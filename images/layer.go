package images

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// File is one entry of an image layer.
type File struct {
	// Path inside the image, e.g. "bin/busybox"; a leading "/" is allowed.
	Path string
	// Mode holds the permission bits and the type: no type bit for a
	// regular file, fs.ModeDir or fs.ModeSymlink.
	Mode fs.FileMode
	// Source is the host file a regular file's contents come from; Data is
	// used when Source is "".
	Source string
	Data   []byte
	// Link is a symlink's target.
	Link string
	// UID and GID own the entry; 0 is root.
	UID, GID int
}

// cleanPath turns an image path into a tar name ("bin/sh"), refusing the
// ones that would climb out of the root.
func cleanPath(p string) (string, error) {
	c := path.Clean("/" + p)
	if c == "/" || strings.Contains(p, "\x00") {
		return "", fmt.Errorf("file path %q is invalid: want a path below / such as bin/busybox", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", fmt.Errorf("file path %q is invalid: it must not contain ..", p)
		}
	}
	return c[1:], nil
}

// writeFilesLayer writes files as one tar stream: sorted by path, parent
// folders added where missing, every timestamp epoch.
func writeFilesLayer(w io.Writer, files []File, epoch time.Time) error {
	byPath := map[string]File{}
	for _, f := range files {
		name, err := cleanPath(f.Path)
		if err != nil {
			return err
		}
		if _, dup := byPath[name]; dup {
			return fmt.Errorf("file path %q appears twice in the layer", f.Path)
		}
		f.Path = name
		byPath[name] = f
	}
	for name := range byPath {
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if f, ok := byPath[dir]; ok {
				if !f.Mode.IsDir() {
					return fmt.Errorf("file path %q is below %q, which is not a folder", name, dir)
				}
				continue
			}
			byPath[dir] = File{Path: dir, Mode: fs.ModeDir | 0o755}
		}
	}
	names := make([]string, 0, len(byPath))
	for name := range byPath {
		names = append(names, name)
	}
	// "a" sorts before "a/b": parents come first.
	slices.Sort(names)

	tw := tar.NewWriter(w)
	for _, name := range names {
		if err := writeFile(tw, byPath[name], epoch); err != nil {
			return err
		}
	}
	return tw.Close()
}

func writeFile(tw *tar.Writer, f File, epoch time.Time) error {
	hdr := &tar.Header{
		Name:    f.Path,
		Mode:    tarMode(f.Mode),
		Uid:     f.UID,
		Gid:     f.GID,
		ModTime: epoch,
	}
	switch {
	case f.Mode.IsDir():
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		return writeHeader(tw, hdr)
	case f.Mode&fs.ModeSymlink != 0:
		if f.Link == "" {
			return fmt.Errorf("symlink %q has an empty Link: want its target", f.Path)
		}
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = f.Link
		return writeHeader(tw, hdr)
	case f.Mode.IsRegular():
		hdr.Typeflag = tar.TypeReg
		if f.Source == "" {
			hdr.Size = int64(len(f.Data))
			if err := writeHeader(tw, hdr); err != nil {
				return err
			}
			_, err := tw.Write(f.Data)
			return err
		}
		src, err := os.Open(f.Source)
		if err != nil {
			return fmt.Errorf("file %q: %w", f.Path, err)
		}
		defer src.Close()
		fi, err := src.Stat()
		if err != nil {
			return fmt.Errorf("file %q: %w", f.Path, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("file %q: source %s is not a regular file", f.Path, f.Source)
		}
		hdr.Size = fi.Size()
		if err := writeHeader(tw, hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, src); err != nil {
			return fmt.Errorf("file %q: copy %s: %w", f.Path, f.Source, err)
		}
		return nil
	}
	return fmt.Errorf("file %q has mode %v: want a regular file, a folder or a symlink", f.Path, f.Mode)
}

// tarMode maps Go's mode bits to the tar header's (setuid and friends live
// elsewhere in fs.FileMode).
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

func writeHeader(tw *tar.Writer, hdr *tar.Header) error {
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
	}
	return nil
}

// skipContents are top-level folders of a root tree whose contents belong
// to the running system, not the image: the runtime mounts its own there.
var skipContents = []string{"dev", "proc", "sys"}

// writeDirLayer writes the tree under root as one tar stream, keeping
// owners, modes, hard links, device nodes and file capabilities, with every
// timestamp epoch. The order is WalkDir's (lexical within each folder),
// which does not depend on the file system.
func writeDirLayer(w io.Writer, root string, epoch time.Time) error {
	fi, err := os.Stat(root)
	if err != nil {
		return fmt.Errorf("root folder: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("root folder %s is not a folder", root)
	}
	pk := &dirPacker{tw: tar.NewWriter(w), root: root, epoch: epoch, links: map[inode]string{}}
	if err := filepath.WalkDir(root, pk.add); err != nil {
		return fmt.Errorf("pack %s: %w", root, err)
	}
	return pk.tw.Close()
}

// inode names a file across hard links.
type inode struct{ dev, ino uint64 }

// dirPacker is writeDirLayer's state while it walks the tree.
type dirPacker struct {
	tw    *tar.Writer
	root  string
	epoch time.Time
	// links maps each hard-linked file to the first name it was packed
	// under; later names become tar links to it.
	links map[inode]string
}

// add packs one entry of the walk (a fs.WalkDirFunc).
func (pk *dirPacker) add(p string, d fs.DirEntry, err error) error {
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(pk.root, p)
	if err != nil {
		return err
	}
	if rel == "." {
		return nil
	}
	name := filepath.ToSlash(rel)
	info, err := d.Info()
	if err != nil {
		return err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no owner information", p)
	}
	hdr := &tar.Header{
		Name:    name,
		Mode:    tarMode(info.Mode()),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: pk.epoch,
		Format:  tar.FormatPAX,
	}
	if caps, err := getxattr(p, "security.capability"); err == nil && len(caps) > 0 {
		hdr.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": string(caps)}
	}
	return pk.write(p, hdr, info, st)
}

// write completes hdr for the entry's type and writes it, with the
// contents of a regular file. It returns fs.SkipDir for the folders whose
// contents are the running system's (skipContents).
func (pk *dirPacker) write(p string, hdr *tar.Header, info fs.FileInfo, st *syscall.Stat_t) error {
	mode := info.Mode()
	switch {
	case mode.IsDir():
		hdr.Typeflag = tar.TypeDir
		name := hdr.Name
		hdr.Name += "/"
		if err := writeHeader(pk.tw, hdr); err != nil {
			return err
		}
		if slices.Contains(skipContents, name) {
			return fs.SkipDir
		}
		return nil
	case mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = target
		return writeHeader(pk.tw, hdr)
	case mode&fs.ModeDevice != 0:
		hdr.Typeflag = tar.TypeBlock
		if mode&fs.ModeCharDevice != 0 {
			hdr.Typeflag = tar.TypeChar
		}
		hdr.Devmajor = int64(unix.Major(st.Rdev))
		hdr.Devminor = int64(unix.Minor(st.Rdev))
		return writeHeader(pk.tw, hdr)
	case mode&fs.ModeNamedPipe != 0:
		hdr.Typeflag = tar.TypeFifo
		return writeHeader(pk.tw, hdr)
	case mode&fs.ModeSocket != 0:
		// A socket is a running program's, never part of an image.
		return nil
	case mode.IsRegular():
		return pk.writeRegular(p, hdr, info.Size(), st)
	}
	return fmt.Errorf("%s has mode %v, which a layer cannot hold", p, mode)
}

// writeRegular writes a regular file: its contents the first time, a tar
// hard link to that first name for each further link to the same inode.
func (pk *dirPacker) writeRegular(p string, hdr *tar.Header, size int64, st *syscall.Stat_t) error {
	key := inode{uint64(st.Dev), st.Ino}
	if st.Nlink > 1 {
		if first, seen := pk.links[key]; seen {
			hdr.Typeflag = tar.TypeLink
			hdr.Linkname = first
			return writeHeader(pk.tw, hdr)
		}
		pk.links[key] = hdr.Name
	}
	hdr.Typeflag = tar.TypeReg
	hdr.Size = size
	if err := writeHeader(pk.tw, hdr); err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if n, err := io.Copy(pk.tw, f); err != nil {
		return fmt.Errorf("copy %s: %w", p, err)
	} else if n != size {
		return fmt.Errorf("%s changed size while it was packed", p)
	}
	return nil
}

func getxattr(p, attr string) ([]byte, error) {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, attr, buf)
	if errors.Is(err, unix.ERANGE) {
		buf = make([]byte, 64<<10)
		n, err = unix.Lgetxattr(p, attr, buf)
	}
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}
