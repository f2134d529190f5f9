//! Pretrained ViT weights: timm's and Hugging Face transformers' safetensors checkpoints, read
//! into vitcore's model (names mapped, the position embedding resampled, the head replaced).
