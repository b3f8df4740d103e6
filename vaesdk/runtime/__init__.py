"""Layer 5, the runtime: onnxruntime sessions (`session`), what a bundle's facts decide
without a session (`spec`), every operation's argument checks (`arguments`), the `Model`
(`model`) and its scores (`scoring`), one image operation over many inputs (`per_image`),
and `vaesdk.load` (`loader`)."""
