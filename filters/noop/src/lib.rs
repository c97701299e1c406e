//! The fixed cost of a wasm filter: a root and an HTTP context that continue every callback.
//! Used only by `make bench`: configuration C4 (the floor the real filters are compared to), and
//! `hostcalls.sh`, which gives it a configuration `CALL=N` to make one host call N times per
//! request, so what each kind of host call costs in Envoy is read as a difference against the
//! same filter configured with nothing to do.

#[cfg(target_arch = "wasm32")]
mod noop {
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType, MapType, MetricType};
    use std::rc::Rc;

    /// The host call a probe repeats (the names `hostcalls.sh` passes).
    #[derive(Clone, Copy, PartialEq)]
    enum Call {
        None,
        /// Every request header, copied into the VM (`get_map_bytes`).
        Headers,
        /// One request header by name.
        Header,
        /// Replace one request header.
        SetHeader,
        /// Add one response header.
        AddResponseHeader,
        /// A property Envoy computes (`source.address`).
        Property,
        /// Write filter state (`set_property`).
        SetProperty,
        /// Read one shared-data key (process-wide lock).
        SharedGet,
        /// Write one shared-data key (process-wide lock).
        SharedSet,
        /// The clock.
        Time,
        /// Increment a counter.
        Metric,
    }

    struct Probe {
        call: Call,
        n: u32,
        metric: u32,
    }

    struct Root {
        probe: Rc<Probe>,
    }

    struct Http {
        probe: Rc<Probe>,
    }

    fn parse(cfg: &str) -> (Call, u32) {
        let (name, n) = cfg.trim().split_once('=').unwrap_or((cfg.trim(), "0"));
        let call = match name {
            "headers" => Call::Headers,
            "header" => Call::Header,
            "set_header" => Call::SetHeader,
            "add_response_header" => Call::AddResponseHeader,
            "property" => Call::Property,
            "set_property" => Call::SetProperty,
            "shared_get" => Call::SharedGet,
            "shared_set" => Call::SharedSet,
            "time" => Call::Time,
            "metric" => Call::Metric,
            _ => Call::None,
        };
        (call, n.parse().unwrap_or(0))
    }

    impl Context for Root {}
    impl RootContext for Root {
        fn on_configure(&mut self, _size: usize) -> bool {
            let cfg = self
                .get_plugin_configuration()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            let (call, n) = parse(&cfg);
            let metric = hostcalls::define_metric(MetricType::Counter, "bench_probe").unwrap_or(0);
            if call == Call::SharedGet {
                let _ = hostcalls::set_shared_data("bench.probe", Some(b"0123456789abcdef"), None);
            }
            self.probe = Rc::new(Probe { call, n, metric });
            true
        }
        fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Http {
                probe: self.probe.clone(),
            }))
        }
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    impl Context for Http {}
    impl HttpContext for Http {
        fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
            let p = &*self.probe;
            for _ in 0..p.n {
                // Results are dropped: only the call's cost is of interest. `black_box` keeps
                // the copies the calls make from being optimised away.
                match p.call {
                    Call::None | Call::AddResponseHeader => {}
                    Call::Headers => {
                        std::hint::black_box(
                            hostcalls::get_map_bytes(MapType::HttpRequestHeaders).ok(),
                        );
                    }
                    Call::Header => {
                        std::hint::black_box(
                            hostcalls::get_map_value_bytes(
                                MapType::HttpRequestHeaders,
                                "authorization",
                            )
                            .ok(),
                        );
                    }
                    Call::SetHeader => {
                        let _ = hostcalls::set_map_value(
                            MapType::HttpRequestHeaders,
                            "x-probe",
                            Some("v"),
                        );
                    }
                    Call::Property => {
                        std::hint::black_box(
                            hostcalls::get_property(vec!["source", "address"]).ok(),
                        );
                    }
                    Call::SetProperty => {
                        let _ =
                            hostcalls::set_property(vec!["bench_probe"], Some(b"0123456789abcdef"));
                    }
                    Call::SharedGet => {
                        std::hint::black_box(hostcalls::get_shared_data("bench.probe").ok());
                    }
                    Call::SharedSet => {
                        let _ = hostcalls::set_shared_data(
                            "bench.probe",
                            Some(b"0123456789abcdef"),
                            None,
                        );
                    }
                    Call::Time => {
                        std::hint::black_box(hostcalls::get_current_time().ok());
                    }
                    Call::Metric => {
                        let _ = hostcalls::increment_metric(p.metric, 1);
                    }
                }
            }
            Action::Continue
        }

        fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
            let p = &*self.probe;
            if p.call == Call::AddResponseHeader {
                for _ in 0..p.n {
                    let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "x-probe", "v");
                }
            }
            Action::Continue
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
            Box::new(Root { probe: Rc::new(Probe { call: Call::None, n: 0, metric: 0 }) })
        });
    }}
}
