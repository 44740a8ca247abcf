"""spectral-prior: a Spectral Diffusion Prior for hyperspectral reconstruction networks."""

__version__ = "0.1.0"
