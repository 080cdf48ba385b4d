"""Benchmarks that print comparable tables and write bench/results/*.json."""
