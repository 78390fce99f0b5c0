package compress

// Compressible reports whether a response of this Content-Type is worth
// compressing: text, and the structured formats that are text underneath
// (JSON, XML, JavaScript, SVG, WebAssembly, uncompressed fonts). Images,
// audio, video, archives and woff fonts are compressed already; a
// response without a type is left alone, since nothing says what it is.
func Compressible(contentType []byte) bool {
	t := contentType
	for i, c := range t {
		if c == ';' {
			t = t[:i]
			break
		}
	}
	t = trim(t)
	if len(t) == 0 || len(t) > 127 {
		return false
	}
	var buf [128]byte
	for i, c := range t {
		buf[i] = lower(c)
	}
	mt := string(buf[:len(t)])
	slash := -1
	for i := 0; i < len(mt); i++ {
		if mt[i] == '/' {
			slash = i
			break
		}
	}
	if slash <= 0 || slash == len(mt)-1 {
		return false
	}
	top, sub := mt[:slash], mt[slash+1:]
	if top == "text" {
		return true
	}
	if hasSuffix(sub, "+json") || hasSuffix(sub, "+xml") || hasSuffix(sub, "+yaml") {
		return true
	}
	switch mt {
	case "application/json", "application/javascript", "application/x-javascript",
		"application/ecmascript", "application/xml", "application/x-ndjson",
		"application/wasm", "application/yaml", "application/x-yaml", "application/toml",
		"application/x-www-form-urlencoded", "application/graphql",
		"application/vnd.ms-fontobject", "application/x-font-ttf", "application/x-font-otf",
		"font/ttf", "font/otf", "font/eot", "image/x-icon", "image/vnd.microsoft.icon",
		"image/bmp":
		return true
	}
	return false
}

func hasSuffix(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}
