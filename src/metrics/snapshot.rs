//! GetStatus: the recorder's rendering as a structured list (filled in with the wire operation).
