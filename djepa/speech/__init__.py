"""The speech modality (paper appendix G.1): readers (LJSpeech, .wav + .txt folders), HiFi-GAN's log-mel features
and their normalisation, an offline G2P, Praat F0 and its 300-entry pitch table, the Griffin-Lim and HiFi-GAN V1
vocoders, sample writers, and the embedded spoken digits with their domain recogniser. docs/speech.md."""
