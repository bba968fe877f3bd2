//! Generation and rendering of the pvabi specification.
