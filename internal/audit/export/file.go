package export

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// File sync policies.
const (
	// FsyncBatch syncs the file (and, after a rotation, its directory)
	// before a batch counts as delivered: the cursor never passes a
	// record a power failure could take back.
	FsyncBatch = "batch"
	// FsyncNone leaves syncing to the operating system: a process crash
	// loses nothing (the data is in the page cache), a power failure may
	// lose the last records while the cursor has passed them.
	FsyncNone = "none"
)

// FileOptions configure a JSON-lines file sink.
type FileOptions struct {
	// Path is the active file; rotated files are named
	// <base>-<UTC time>.<ext> beside it
	// (ward-20260401T120000.000000000Z.jsonl).
	Path string
	// MaxBytes rotates the file before a batch would take it past this
	// size (0: no size limit). MaxAge rotates a file opened this long ago
	// (0: no age limit). MaxFiles is how many rotated files are kept (0:
	// all).
	MaxBytes int64
	MaxAge   time.Duration
	MaxFiles int
	Fsync    string // FsyncBatch (default) or FsyncNone
	Now      func() time.Time
}

// FileSink appends one OCSF record per line.
//
// The file is its own acknowledgement: when the sink's cursor is taken
// (Warm), the records after the cursor that the file already holds,
// written and synced by a process that died before the cursor moved,
// are not written again. A file therefore holds each record once, also
// across a kill -9.
type FileSink struct {
	o      FileOptions
	mu     sync.Mutex
	f      *os.File
	size   int64
	opened time.Time
	buf    bytes.Buffer
	// have: ids of records after the cursor found in the file by Warm,
	// up to sequence number haveMax.
	have    map[string]bool
	haveMax int64
}

// NewFileSink opens (creating, mode 0600) the file of o. A last line
// left incomplete by a crash is cut off: its record was not delivered,
// so it comes again.
func NewFileSink(o FileOptions) (*FileSink, error) {
	if o.Path == "" {
		return nil, errors.New("export: file sink: no path")
	}
	if o.Fsync == "" {
		o.Fsync = FsyncBatch
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(o.Path), 0o700); err != nil {
		return nil, fmt.Errorf("export: file sink: %w", err)
	}
	s := &FileSink{o: o}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *FileSink) open() error {
	f, err := os.OpenFile(s.o.Path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("export: file sink: %w", err)
	}
	size, err := trimPartialLine(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("export: file sink: %s: %w", s.o.Path, err)
	}
	if _, err := f.Seek(size, io.SeekStart); err != nil {
		f.Close()
		return err
	}
	s.f, s.size, s.opened = f, size, s.o.Now()
	if st, err := f.Stat(); err == nil && size > 0 && st.ModTime().Before(s.opened) {
		// An existing file ages from when it was last rotated: its
		// modification time is the best that is known.
		s.opened = st.ModTime()
	}
	return nil
}

// trimPartialLine truncates f after its last newline and returns the
// resulting size.
func trimPartialLine(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	if size == 0 {
		return 0, nil
	}
	const chunk = 64 << 10
	end := size
	buf := make([]byte, chunk)
	for end > 0 {
		start := max(0, end-chunk)
		n, err := f.ReadAt(buf[:end-start], start)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			end = start + int64(i) + 1
			break
		}
		end = start
	}
	if end != size {
		if err := f.Truncate(end); err != nil {
			return 0, err
		}
	}
	return end, nil
}

// warmTail bounds what Warm reads of each file: more than a batch
// (max_bytes, 4 MiB by default).
const warmTail = 8 << 20

// Warm implements Warmer: it notes the records after cursor that the
// active file and the newest rotated one already hold.
func (s *FileSink) Warm(_ context.Context, cursor int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	s.have, s.haveMax = nil, 0
	files := []string{s.o.Path}
	if r := RotatedFiles(s.o.Path); len(r) > 0 {
		files = append(files, r[len(r)-1])
	}
	for _, p := range files {
		if err := s.scanTail(p, cursor); err != nil {
			return fmt.Errorf("export: file sink: %s: %w", p, err)
		}
	}
	return nil
}

// scanTail reads the complete lines of the last warmTail bytes of p.
func (s *FileSink) scanTail(p string, cursor int64) error {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	start := max(0, st.Size()-warmTail)
	b := make([]byte, st.Size()-start)
	if _, err := f.ReadAt(b, start); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	lines := bytes.Split(b, []byte("\n"))
	lines = lines[:len(lines)-1] // after the last newline: nothing, or a partial line
	if start > 0 && len(lines) > 0 {
		lines = lines[1:] // cut by the window
	}
	for _, l := range lines {
		var r struct {
			Metadata struct {
				UID      string `json:"uid"`
				Sequence int64  `json:"sequence"`
			} `json:"metadata"`
		}
		if json.Unmarshal(l, &r) != nil || r.Metadata.UID == "" || r.Metadata.Sequence <= cursor {
			continue
		}
		if s.have == nil {
			s.have = map[string]bool{}
		}
		s.have[r.Metadata.UID] = true
		s.haveMax = max(s.haveMax, r.Metadata.Sequence)
	}
	return nil
}

// Deliver appends the records, in as few writes as the rotation allows,
// and syncs per the policy. A file passes MaxBytes only when one record
// alone is larger.
func (s *FileSink) Deliver(_ context.Context, items []Item) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	done := false // past what Warm found
	if len(s.have) > 0 {
		kept := make([]Item, 0, len(items))
		for _, it := range items {
			if !s.have[it.ID] {
				kept = append(kept, it)
			}
			done = done || it.Seq >= s.haveMax
		}
		items = kept
	}
	if s.size > 0 && s.o.MaxAge > 0 && s.o.Now().Sub(s.opened) >= s.o.MaxAge {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	s.buf.Reset()
	for _, it := range items {
		line := int64(len(it.JSON) + 1)
		if s.o.MaxBytes > 0 && s.size+int64(s.buf.Len())+line > s.o.MaxBytes && s.size+int64(s.buf.Len()) > 0 {
			if err := s.write(); err != nil {
				return err
			}
			if err := s.rotate(); err != nil {
				return err
			}
		}
		s.buf.Write(it.JSON)
		s.buf.WriteByte('\n')
	}
	if err := s.write(); err != nil {
		return err
	}
	if s.o.Fsync != FsyncNone {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("export: file sink: sync: %w", err)
		}
	}
	if done {
		s.have, s.haveMax = nil, 0
	}
	return nil
}

// write appends the buffer to the active file.
func (s *FileSink) write() error {
	if s.buf.Len() == 0 {
		return nil
	}
	n, err := s.f.Write(s.buf.Bytes())
	s.size += int64(n)
	s.buf.Reset()
	if err != nil {
		// A short write leaves a partial line: reopening cuts it, so the
		// retry starts on a line of its own.
		s.f.Close()
		s.f = nil
		return fmt.Errorf("export: file sink: %w", err)
	}
	return nil
}

const rotatedTime = "20060102T150405.000000000Z"

// rotate renames the active file and opens a new one.
func (s *FileSink) rotate() error {
	if s.o.Fsync != FsyncNone {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("export: file sink: sync: %w", err)
		}
	}
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("export: file sink: %w", err)
	}
	s.f = nil
	ext := filepath.Ext(s.o.Path)
	base := strings.TrimSuffix(s.o.Path, ext)
	// Names sort in rotation order: the time to the nanosecond, moved on
	// past a name already taken.
	t := s.o.Now().UTC()
	name := base + "-" + t.Format(rotatedTime) + ext
	for fileExists(name) {
		t = t.Add(time.Nanosecond)
		name = base + "-" + t.Format(rotatedTime) + ext
	}
	if err := os.Rename(s.o.Path, name); err != nil {
		return fmt.Errorf("export: file sink: rotate: %w", err)
	}
	if err := s.open(); err != nil {
		return err
	}
	if s.o.Fsync != FsyncNone {
		if err := syncDir(filepath.Dir(s.o.Path)); err != nil {
			return err
		}
	}
	s.prune()
	return nil
}

// prune deletes the oldest rotated files beyond MaxFiles.
func (s *FileSink) prune() {
	if s.o.MaxFiles <= 0 {
		return
	}
	files := RotatedFiles(s.o.Path)
	for len(files) > s.o.MaxFiles {
		_ = os.Remove(files[0])
		files = files[1:]
	}
}

// RotatedFiles lists the rotated files of the sink writing path, oldest
// first.
func RotatedFiles(path string) []string {
	ext := filepath.Ext(path)
	base := strings.TrimSuffix(path, ext)
	matches, _ := filepath.Glob(base + "-*" + ext)
	sort.Strings(matches) // the UTC time in the names sorts them
	return matches
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("export: file sink: sync directory: %w", err)
	}
	return nil
}

// Close syncs and closes the file.
func (s *FileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := errors.Join(s.f.Sync(), s.f.Close())
	s.f = nil
	return err
}
