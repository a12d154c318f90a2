"""sarde daemon: config, wire format, readers, stage loop, tracking, windows, events, metrics."""
