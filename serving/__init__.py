"""Answers: Triton client, local Triton launcher, model repository and rollout."""
