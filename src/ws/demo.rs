//! The demo page: a small browser client served on the WebSocket port at
//! `/` (`--demo`, on by default), so a newcomer sees the hub work with
//! nothing but a browser. Plain HTML and JavaScript compiled into the
//! binary: no build step, no CDN, works offline.

/// One file of the page.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

/// The page's files by path.
pub fn asset(path: &str) -> Option<Asset> {
    match path {
        "/" | "/index.html" => Some(Asset {
            content_type: "text/html; charset=utf-8",
            body: include_str!("demo/index.html"),
        }),
        "/demo.js" => Some(Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_str!("demo/demo.js"),
        }),
        _ => None,
    }
}

/// Headers every file is served with: no caching across upgrades of the
/// binary, no sniffing, no framing, and scripts only from this page (the
/// page shows other people's messages; it never treats them as HTML).
pub const HEADERS: &str = "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src data:; connect-src 'self' ws: wss:; frame-ancestors 'none'\r\n";
