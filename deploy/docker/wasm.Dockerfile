# palisade/<module>-wasm: one Wasm module in the image shape Istio's fetcher accepts
# (istio/istio pkg/wasm/imagefetcher.go): a single-platform image whose last (and only) layer is a
# tar holding `plugin.wasm` (gzip-compressed when pushed). Built by `make images`.
FROM scratch
COPY plugin.wasm /plugin.wasm
