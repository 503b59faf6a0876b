//! Reading `{body.POINTER}` fields the way Go's `encoding/json` binds struct fields (SKELETON).
