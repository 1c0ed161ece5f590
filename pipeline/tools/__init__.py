"""The commands around the pipeline that are no dvc.yaml stage: pretrained export, offline plots, the judging study."""
