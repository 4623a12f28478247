package tlsfiles

import (
	"fmt"
	"os"
	"sync"
)

// watched caches a value loaded from a set of files and reloads it when any
// file's identity (inode), size or modification time changes. A Kubernetes
// secret volume swaps a symlink, which changes the identity of the file the
// path resolves to, so it is caught even when the times match.
//
// get is safe for concurrent use; it stats the files on every call (a few
// syscalls per handshake) and reads them only when something changed.
type watched[T any] struct {
	paths    []string
	load     func() (T, error)
	onReload func(error)

	mu     sync.Mutex
	stamps []os.FileInfo
	val    T
	ok     bool
}

// get returns the current value. When the files changed but the new contents
// do not load (a rotation caught half-written, a bad key), it keeps returning
// the last good value, reports the error to onReload, and tries again on the
// next call. Only when nothing has loaded yet does it return the error.
func (w *watched[T]) get() (T, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	stamps, err := statAll(w.paths)
	if err == nil && w.ok && sameStamps(stamps, w.stamps) {
		return w.val, nil
	}
	var v T
	if err == nil {
		v, err = w.load()
	} else if !w.ok {
		// Nothing loaded yet: load's "open ...: no such file" reads better
		// than stat's.
		if _, lerr := w.load(); lerr != nil {
			err = lerr
		}
	}
	if err != nil {
		if w.ok {
			if w.onReload != nil {
				w.onReload(fmt.Errorf("reload %v (keeping the previous files): %w", w.paths, err))
			}
			return w.val, nil
		}
		return v, err
	}
	w.val, w.stamps, w.ok = v, stamps, true
	return v, nil
}

func statAll(paths []string) ([]os.FileInfo, error) {
	out := make([]os.FileInfo, len(paths))
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		out[i] = fi
	}
	return out, nil
}

func sameStamps(a, b []os.FileInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !os.SameFile(a[i], b[i]) || a[i].Size() != b[i].Size() || !a[i].ModTime().Equal(b[i].ModTime()) {
			return false
		}
	}
	return true
}
