"""Developer tools behind `make colab-check` and the browser check (not part of the library)."""
