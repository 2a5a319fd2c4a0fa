"""Initialisation from the Riemann zeta zeros (table, GUE extension, initialisers, ZetaEmbedding)."""

from muse.init.zeta import (
    ZetaEmbedding,
    ZetaInitializer,
    apply_zeta_initialization,
    gue_extension,
    wigner_spacings,
    zeta_position_table,
    zeta_statistics,
    zeta_table,
    zeta_zeros,
)

__all__ = [
    "ZetaEmbedding", "ZetaInitializer", "apply_zeta_initialization", "gue_extension",
    "wigner_spacings", "zeta_position_table", "zeta_statistics", "zeta_table", "zeta_zeros",
]
