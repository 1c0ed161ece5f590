"""One module per dvc.yaml stage (``nst <stage>``); stages never import each other, only the shared modules above."""
