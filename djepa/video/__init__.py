"""The video modality (paper appendix G.3): readers, Moving MNIST, the video VAE, writers and FVD."""
