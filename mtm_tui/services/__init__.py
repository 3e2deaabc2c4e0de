"""What the CLI and the TUI both use, without Textual: the queue of detached runs (jobs) and how a run reads in a
table (rows)."""
