"""Answers: Triton client, model export and optimisation, local Triton launcher, model repository."""
