package spiffe

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// FileSource is a Source reading the files WriteFiles writes (SVIDFile, KeyFile, BundleFile) in
// a folder. It looks at the files again when asked for them at least fileCheckInterval after it
// last did (every handshake and token signature asks; no goroutine watches), and reads them
// again when one of them changed. Files that do not make a valid set (a key not matching its
// certificate: a rotation half written) leave the last good set in use until they do. Safe for
// concurrent use.
type FileSource struct {
	dir string

	mu      sync.Mutex
	svid    *x509svid.SVID
	bundle  *x509bundle.Bundle
	stamp   string    // the files' sizes and times when the set in use was read
	checked time.Time // when the files were last looked at
}

// fileCheckInterval is how stale a FileSource may be: a rotation is seen this long after its
// files are written, at most.
const fileCheckInterval = 500 * time.Millisecond

// Files returns the Source of the identity files in dir, which must hold a valid set now.
func Files(dir string) (*FileSource, error) {
	s := &FileSource{dir: dir}
	stamp, err := s.stat()
	if err == nil {
		err = s.load(stamp)
	}
	if err != nil {
		return nil, fmt.Errorf("spiffe: identity files in %s (%s, %s, %s): %w", dir, SVIDFile, KeyFile, BundleFile, err)
	}
	s.checked = time.Now()
	return s, nil
}

// GetX509SVID returns the SVID of the files.
func (s *FileSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh()
	return s.svid, nil
}

// GetX509BundleForTrustDomain returns the bundle of the files when it is td's.
func (s *FileSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh()
	return s.bundle.GetX509BundleForTrustDomain(td)
}

// refresh reads the files again if it is time to look and they changed; s.mu is held.
func (s *FileSource) refresh() {
	now := time.Now()
	if now.Sub(s.checked) < fileCheckInterval {
		return
	}
	s.checked = now
	if stamp, err := s.stat(); err == nil && stamp != s.stamp {
		_ = s.load(stamp) // a set that does not parse yet: keep the one in use, look again later
	}
}

func (s *FileSource) stat() (string, error) {
	var stamp string
	for _, name := range []string{SVIDFile, KeyFile, BundleFile} {
		fi, err := os.Stat(filepath.Join(s.dir, name))
		if err != nil {
			return "", err
		}
		stamp += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return stamp, nil
}

func (s *FileSource) load(stamp string) error {
	svid, err := x509svid.Load(filepath.Join(s.dir, SVIDFile), filepath.Join(s.dir, KeyFile))
	if err != nil {
		return err
	}
	bundle, err := x509bundle.Load(svid.ID.TrustDomain(), filepath.Join(s.dir, BundleFile))
	if err != nil {
		return err
	}
	s.svid, s.bundle, s.stamp = svid, bundle, stamp
	return nil
}
