"""The text condition (issue 25): caption data readers, text encoders and the embedded text-to-image data."""
