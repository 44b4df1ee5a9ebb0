"""Moves events: schema and codec, session state, the Faust app and agents, local broker, replay."""
