"""Synthetic demo field data (pure numpy scenes, written through `geo.demo_io`) and the `demo` job."""
