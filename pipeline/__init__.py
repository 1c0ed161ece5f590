"""DVC stages (one thin module each), config loading, image IO, data sources and tracking."""
