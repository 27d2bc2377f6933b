"""Training of the cascade's end-of-turn head (`parley eou train`): text data, SmolLM2 features, fit."""
