//! The web UI at `/ui/`: the files Vite built into `ui/dist`, embedded in
//! the binary by `build.rs`. They are public (no token needed: they hold no
//! data); the page asks for a token and calls the API with it.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

mod assets {
    include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));
}

/// The page may load only its own scripts and styles and talk only to this
/// server: the token it keeps in localStorage must not leak to a script
/// from elsewhere. Cytoscape sets element styles from script, which CSP
/// counts as inline styles.
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

fn serve(path: &str) -> Response {
    let Some((_, body, content_type)) = assets::ASSETS.iter().find(|(p, _, _)| *p == path) else {
        return (StatusCode::NOT_FOUND, "no such file of the web UI\n").into_response();
    };
    // Vite names bundles by content hash: they never change under a name.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, cache),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        *body,
    )
        .into_response();
    if path.ends_with(".html") {
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    response
}

/// `GET /ui`: to `/ui/`, so that relative asset paths resolve.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/`: the page.
pub async fn index() -> Response {
    serve("index.html")
}

/// `GET /ui/<path>`: a bundled file.
pub async fn file(Path(path): Path<String>) -> Response {
    serve(&path)
}
