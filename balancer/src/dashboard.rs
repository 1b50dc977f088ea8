//! The dashboard: `GET /` (the page) and `GET /assets/{*path}` (its script, style and
//! the vendored uPlot chart library), embedded in the binary with `include_bytes!`.
//! The page holds no data: it asks for the API token and reads everything through the
//! REST API v1 with it, so serving it needs no token. Every answer carries an ETag (the
//! sha256 of the bytes) and `Cache-Control: no-cache`, so a browser revalidates and an
//! upgraded balancer never serves a stale script; `If-None-Match` answers 304.
use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::error::AppError;

/// One embedded file.
struct Asset {
    /// Path under `/assets/` (the page itself is `/`).
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const INDEX: Asset = Asset {
    path: "index.html",
    content_type: "text/html; charset=utf-8",
    bytes: include_bytes!("../dashboard/index.html"),
};

/// The files under `/assets/`.
const ASSETS: &[Asset] = &[
    Asset {
        path: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../dashboard/app.js"),
    },
    Asset {
        path: "style.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../dashboard/style.css"),
    },
    Asset {
        path: "vendor/uplot/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../dashboard/vendor/uplot/uPlot.iife.min.js"),
    },
    Asset {
        path: "vendor/uplot/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../dashboard/vendor/uplot/uPlot.min.css"),
    },
    Asset {
        path: "vendor/uplot/LICENSE",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("../dashboard/vendor/uplot/LICENSE"),
    },
];

/// The page's content security policy: scripts and styles only from this origin (uPlot
/// sets element styles from script, which needs `'unsafe-inline'` for styles), API calls
/// only to this origin, no frames.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'none'";

/// The dashboard's routes, to merge into the service's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
}

/// ETags of the embedded files, computed once: index 0 is the page, then [`ASSETS`].
fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        std::iter::once(&INDEX)
            .chain(ASSETS)
            .map(|a| {
                let hash = Sha256::digest(a.bytes);
                // Hex is always a valid header value.
                HeaderValue::from_str(&format!("\"{}\"", hex::encode(&hash[..16])))
                    .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
            })
            .collect()
    })
}

fn serve(asset: &Asset, etag: &HeaderValue, req: &HeaderMap, page: bool) -> Response {
    let matches = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == etag)
        });
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if page {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    if matches {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    (StatusCode::OK, headers, asset.bytes).into_response()
}

/// `GET /`: the dashboard page.
async fn index(req: HeaderMap) -> Response {
    let etag = &etags()[0];
    serve(&INDEX, etag, &req, true)
}

/// `GET /assets/{*path}`: one embedded file, or the JSON 404.
async fn asset(Path(path): Path<String>, req: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.path == path) {
        Some(i) => serve(&ASSETS[i], &etags()[i + 1], &req, false),
        None => AppError::NotFound(format!(
            "no dashboard asset `{}`",
            path.chars().take(100).collect::<String>()
        ))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(uri: &str, etag: Option<&str>) -> Response {
        let mut req = Request::get(uri);
        if let Some(e) = etag {
            req = req.header(header::IF_NONE_MATCH, e);
        }
        router::<()>()
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    async fn body(resp: Response) -> Vec<u8> {
        resp.into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn page_and_assets_with_types_and_etags() {
        let resp = get("/", None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], INDEX.content_type);
        assert!(resp.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let page = String::from_utf8(body(resp).await).expect("utf-8 page");
        // Every asset the page links is served.
        for link in [
            "/assets/app.js",
            "/assets/style.css",
            "/assets/vendor/uplot/",
        ] {
            assert!(page.contains(link), "the page links {link}");
        }
        for a in ASSETS {
            let resp = get(&format!("/assets/{}", a.path), None).await;
            assert_eq!(resp.status(), StatusCode::OK, "{}", a.path);
            assert_eq!(resp.headers()[header::CONTENT_TYPE], a.content_type);
            assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-cache");
            let etag = resp.headers()[header::ETAG]
                .to_str()
                .expect("ascii etag")
                .to_owned();
            assert_eq!(body(resp).await, a.bytes, "{}", a.path);
            let again = get(&format!("/assets/{}", a.path), Some(&etag)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{}", a.path);
            assert!(body(again).await.is_empty());
            let other = get(&format!("/assets/{}", a.path), Some("\"other\"")).await;
            assert_eq!(other.status(), StatusCode::OK, "{}", a.path);
        }
        // Distinct files have distinct tags.
        let tags = etags();
        for (i, t) in tags.iter().enumerate() {
            assert!(!tags[..i].contains(t), "duplicate etag {t:?}");
        }
    }

    #[tokio::test]
    async fn unknown_asset_is_the_json_404() {
        for uri in [
            "/assets/nope.js",
            "/assets/../src/lib.rs",
            "/assets/vendor/uplot",
        ] {
            let resp = get(uri, None).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{uri}");
            let v: serde_json::Value =
                serde_json::from_slice(&body(resp).await).expect("JSON error body");
            assert_eq!(v["error"]["code"], "not_found", "{uri}");
        }
    }
}
