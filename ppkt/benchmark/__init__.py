"""Benchmarks that decide: paired fine-tuning runs (pretrained vs scratch), intervals, verdicts, reusable results."""
