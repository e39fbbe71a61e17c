"""containerd snapshotter storage: metadata store, filters, mount planner and the snapshotter itself."""
