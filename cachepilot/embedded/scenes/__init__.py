"""The embedded text-to-image scenes: procedurally generated captioned 32x32 scenes of 1-3 coloured
shapes (`data`), the offline tokenizer over their caption vocabulary (`tokenizer`) and the adherence
judge, the offline stand-in for CLIP score (`judge`).

The text-to-image model of the scenes is an unmodified diffusers `FluxPipeline`, tiny, built by
`pipeline.build_scenes_flux` and trained from scratch by `python -m cachepilot.embedded.scenes.train`
(`train`: VAE, latent bank, transformer + text encoders with Lightning, export, evaluation); it ships in
`checkpoints/scenes-flux`."""
