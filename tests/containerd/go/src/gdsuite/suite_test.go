// Package gdsuite runs containerd's own snapshotter conformance suite (snapshots/testsuite) against
// graphdriver's containerd snapshotter, through containerd's snapshots/proxy gRPC client: every case gets a
// fresh `graphdriver serve containerd-snapshotter` process on the case's root.
//
// Environment: GD_PYTHON (the interpreter that imports graphdriver; default python3), GD_SUITE_NAME (the
// suite's name for the snapshotter; default "overlayfs"), GD_DRIVER (passed as --driver when set).
//
// The suite name matters in containerd 1.7: its Rename case renames a lower-layer directory unless the name is
// "overlayfs" (overlayfs without redirect_dir answers EXDEV there), so overlay-backed servers run as "overlayfs".
package gdsuite

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func TestSnapshotterSuite(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the suite mounts: run as root")
	}
	testsuite.SnapshotterSuite(t, env("GD_SUITE_NAME", "overlayfs"), newSnapshotter)
}

// newSnapshotter starts a server on root (socket beside it) and returns containerd's proxy client to it.
func newSnapshotter(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	sock := filepath.Join(filepath.Dir(root), "gd.sock")
	logPath := filepath.Join(filepath.Dir(root), "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	args := []string{"-m", "graphdriver", "serve", "containerd-snapshotter", "--socket", sock, "--root", root}
	if d := os.Getenv("GD_DRIVER"); d != "" {
		args = append(args, "--driver", d)
	}
	cmd := exec.Command(env("GD_PYTHON", "python3"), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, nil, err
	}
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			logFile.Close()
			return err
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			logFile.Close()
			return fmt.Errorf("server on %s did not stop on SIGTERM", sock)
		}
	}
	dialer := func(ctx context.Context, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			_ = stop()
			log, _ := os.ReadFile(logPath)
			return nil, nil, fmt.Errorf("server did not listen on %s: %s", sock, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.DialContext(ctx, "passthrough:///graphdriver", grpc.WithInsecure(),
		grpc.WithContextDialer(dialer))
	if err != nil {
		_ = stop()
		return nil, nil, err
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "graphdriver")
	cleanup := func() error {
		conn.Close()
		if err := stop(); err != nil {
			return err
		}
		// Only the start-up line is expected; anything more (a traceback) is worth seeing.
		if log, _ := os.ReadFile(logPath); strings.Count(string(log), "\n") > 1 {
			fmt.Fprintf(os.Stderr, "server log %s:\n%s", root, log)
		}
		return nil
	}
	return sn, cleanup, nil
}
