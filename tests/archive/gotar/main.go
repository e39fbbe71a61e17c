// Writes a tar with Go's archive/tar, as moby's pkg/archive does (Format PAX, xattrs as SCHILY.xattr),
// from a JSON list of headers on stdin (byte strings in base64); the tar goes to stdout. The reference
// the layer tar writer's bytes are compared with (tests/archive/test_go_tar.py).
package main

import (
	"archive/tar"
	"encoding/base64"
	"encoding/json"
	"os"
	"time"
)

type E struct {
	Name, Link, Data string // base64
	Type                     byte
	Mode                     int64
	Uid, Gid                 int
	Size, Mtime              int64
	Uname, Gname             string
	Major, Minor             int64
	Xattrs                   map[string]string // base64 values
}

func d(s string) string { b, err := base64.StdEncoding.DecodeString(s); if err != nil { panic(err) }; return string(b) }

func main() {
	var es []E
	if err := json.NewDecoder(os.Stdin).Decode(&es); err != nil { panic(err) }
	tw := tar.NewWriter(os.Stdout)
	for _, e := range es {
		h := &tar.Header{Typeflag: e.Type, Name: d(e.Name), Linkname: d(e.Link), Mode: e.Mode, Uid: e.Uid, Gid: e.Gid,
			Size: e.Size, ModTime: time.Unix(e.Mtime, 0), Uname: e.Uname, Gname: e.Gname,
			Devmajor: e.Major, Devminor: e.Minor, Format: tar.FormatPAX}
		if len(e.Xattrs) > 0 {
			h.Xattrs = map[string]string{}
			for k, v := range e.Xattrs { h.Xattrs[k] = d(v) }
		}
		if err := tw.WriteHeader(h); err != nil { panic(err) }
		if _, err := tw.Write([]byte(d(e.Data))); err != nil { panic(err) }
	}
	if err := tw.Close(); err != nil { panic(err) }
}
