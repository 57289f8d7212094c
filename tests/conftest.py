"""Shared test setup: CPU only, and a fixed small thread pool for stable timing."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
