"""Synthetic, deterministic multi-source customer data for demos, tests and benchmarks (``patron generate``).

``dataset.generate_dataset`` is the entry point; each source module (``web``, ``shop``, ``sales``,
``support``, ``marketing``, ``billing``) turns the simulated customers into one or two files.
"""
