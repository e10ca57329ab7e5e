"""Selfex services, one package each."""
