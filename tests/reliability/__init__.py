"""Reliability and security suite: fault matrix, hostile input, secrets and transport."""
