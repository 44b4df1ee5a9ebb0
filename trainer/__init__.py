"""Learns: the next-item model, data, training loop, full-ranking evaluation, fine-tuning."""
