"""The embedded text-to-image scenes: procedurally generated captioned 32x32 scenes of 1-3 coloured
shapes (`data`), the offline tokenizer over their caption vocabulary (`tokenizer`) and the adherence
judge, the offline stand-in for CLIP score (`judge`)."""
