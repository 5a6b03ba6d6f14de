"""Sub-commands of `fusionseg` that are not Lightning stages."""
