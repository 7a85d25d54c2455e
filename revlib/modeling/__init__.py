"""Models and what runs them: the model loader and embedded presets, GGUF sources, pretraining, SFT/DPO training through trl, multi-process launch, the ALP probe scorer and rollout engines."""
