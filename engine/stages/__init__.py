"""One module per stage; each is select(recipe, env) -> params, run(ctx, params, upstream)."""
