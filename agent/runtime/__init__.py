"""Execution on this machine: slots, worker processes, the journal, blobs and telemetry."""
