"""Training loops: one engine (DDP, AMP, gradient accumulation, checkpoint/resume) and a task
adapter per model (encoder, detector)."""
