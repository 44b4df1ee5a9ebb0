"""Learns: the next-item model, data, training loop, full-ranking evaluation, ONNX export, fine-tuning."""
