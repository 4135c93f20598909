"""The floor under everything: atomic writes and output checks, bounded reads, the run lock, the device, plain text."""
