"""Other tools talking to the engine: Label Studio's ML backend protocol and its client."""
