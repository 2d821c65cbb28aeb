use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddrV4;

use crate::layout::Layout;
use crate::spec::{CustomForwarding, Desired};
use crate::types::{Hostname, Scheme};

/// Where nginx should send one hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: Hostname,
    /// A stable nginx upstream name.
    pub upstream_name: String,
    pub servers: Vec<SocketAddrV4>,
}

/// Everything nginx needs, in typed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxSite {
    pub options: NginxOptions,
    pub https: Vec<Route>,
    pub http: Vec<Route>,
}

/// Operator settings of the generated nginx config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxOptions {
    /// `PORT`, `IP:PORT` or `[IPv6]:PORT` (checked at start-up).
    pub https_listen: String,
    pub http_listen: String,
    /// Written in the http file so long hostnames fit; 0 leaves it to the
    /// main config (nginx refuses the directive twice).
    pub server_names_hash_bucket_size: u32,
}

/// nginx's two files as they should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxFiles {
    pub stream: String,
    pub http: String,
}

impl NginxFiles {
    pub fn render(layout: &Layout, desired: &Desired, custom: &[CustomForwarding], options: &NginxOptions) -> Self {
        let site = NginxSite::build(layout, desired, custom, options);
        NginxFiles { stream: nginx_stream(&site), http: nginx_http(&site) }
    }
}

impl NginxSite {
    pub fn build(layout: &Layout, desired: &Desired, custom: &[CustomForwarding], options: &NginxOptions) -> Self {
        let mut https = Vec::new();
        let mut http = Vec::new();
        for spec in desired.networks.values() {
            let ports = layout.dnat_ports(&spec.upstreams());
            let veth_ip = layout.veth_ns_ip(spec.port);
            let to_veth = |servers: &Vec<SocketAddrV4>| -> Vec<SocketAddrV4> {
                servers.iter().filter_map(|u| ports.get(u)).map(|p| SocketAddrV4::new(veth_ip, *p)).collect()
            };
            for (scheme, map, out) in [(Scheme::Https, &spec.https, &mut https), (Scheme::Http, &spec.http, &mut http)] {
                for (i, (host, servers)) in map.iter().enumerate() {
                    let upstream_name = format!("gateway_{}_{}_{i}", scheme.name(), spec.port);
                    out.push(Route { host: host.clone(), upstream_name, servers: to_veth(servers) });
                }
            }
        }
        for (i, f) in custom.iter().enumerate() {
            let out = if f.url.scheme == Scheme::Https { &mut https } else { &mut http };
            let upstream_name = format!("gateway_{}_custom_{i}", f.url.scheme.name());
            out.push(Route { host: f.url.host.clone(), upstream_name, servers: vec![f.upstream] });
        }
        https.sort_by(|a, b| a.host.cmp(&b.host));
        http.sort_by(|a, b| a.host.cmp(&b.host));
        NginxSite { options: options.clone(), https, http }
    }

    /// Which hostnames go where.
    pub fn routes(&self) -> BTreeMap<String, Vec<SocketAddrV4>> {
        let mut m = BTreeMap::new();
        for (scheme, list) in [(Scheme::Https, &self.https), (Scheme::Http, &self.http)] {
            for r in list {
                m.insert(format!("{}://{}", scheme.name(), r.host), r.servers.clone());
            }
        }
        m
    }
}

pub(crate) const HEADER: &str = "# Written by gateway. Do not edit: it is rewritten whenever the desired state changes.\n";

fn upstream_block(s: &mut String, indent: &str, r: &Route) {
    let _ = writeln!(s, "{indent}upstream {} {{", r.upstream_name);
    for srv in &r.servers {
        let _ = writeln!(s, "{indent}    server {srv};");
    }
    let _ = writeln!(s, "{indent}}}");
}

/// The `stream {}` block: HTTPS passed through untouched, chosen by SNI.
pub fn nginx_stream(site: &NginxSite) -> String {
    let mut s = String::from(HEADER);
    s.push_str("stream {\n");
    // Room for 253-character names and many of them.
    s.push_str("    map_hash_bucket_size 512;\n    map_hash_max_size 65536;\n");
    s.push_str("    map $ssl_preread_server_name $gateway_backend {\n        default gateway_unknown_host;\n");
    for r in &site.https {
        // The leading backslash makes names like `default`, `include` or
        // `hostnames` plain keys instead of map parameters.
        let _ = writeln!(s, "        \\{} {};", r.host, r.upstream_name);
    }
    s.push_str("    }\n\n");
    s.push_str("    # A name nobody serves: the connection is closed.\n");
    s.push_str("    upstream gateway_unknown_host {\n        server 127.0.0.1:9 down;\n    }\n");
    for r in &site.https {
        upstream_block(&mut s, "    ", r);
    }
    s.push_str("\n    server {\n");
    let _ = writeln!(s, "        listen {};", site.options.https_listen);
    s.push_str("        ssl_preread on;\n        proxy_pass $gateway_backend;\n");
    s.push_str("        # The first connection may wait for a WireGuard handshake.\n");
    s.push_str("        proxy_connect_timeout 10s;\n");
    s.push_str("        # Long-lived TLS connections (websockets, streaming) stay open while idle.\n");
    s.push_str("        proxy_timeout 1h;\n");
    s.push_str("    }\n}\n");
    s
}

/// `server {}` blocks included inside `http {}`: reverse proxy by Host.
pub fn nginx_http(site: &NginxSite) -> String {
    let mut s = String::from(HEADER);
    if site.http.is_empty() {
        return s;
    }
    if site.options.server_names_hash_bucket_size > 0 {
        let _ = writeln!(s, "server_names_hash_bucket_size {};", site.options.server_names_hash_bucket_size);
    }
    s.push_str("map $http_upgrade $gateway_connection_upgrade {\n    default upgrade;\n    '' close;\n}\n");
    for r in &site.http {
        s.push('\n');
        upstream_block(&mut s, "", r);
        s.push_str("server {\n");
        let _ = writeln!(s, "    listen {};", site.options.http_listen);
        let _ = writeln!(s, "    server_name {};", r.host);
        s.push_str("    location / {\n");
        let _ = writeln!(s, "        proxy_pass http://{};", r.upstream_name);
        s.push_str(concat!(
            "        proxy_http_version 1.1;\n",
            "        proxy_set_header Host $host;\n",
            "        proxy_set_header X-Real-IP $remote_addr;\n",
            "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n",
            "        proxy_set_header X-Forwarded-Proto $scheme;\n",
            "        proxy_set_header Upgrade $http_upgrade;\n",
            "        proxy_set_header Connection $gateway_connection_upgrade;\n",
            "        proxy_connect_timeout 10s;\n",
            "        proxy_read_timeout 1h;\n",
            "        proxy_send_timeout 1h;\n",
            "    }\n}\n",
        ));
    }
    s
}
