"""The text condition: prompt files, text encoders and the text-to-image metrics (CLIP score)."""
