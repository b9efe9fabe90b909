use hasme::Problem;
#[test]
fn probe() {
    let show = |t: &str, x: &[f64]| {
        match Problem::from_str(t) {
            Ok(p) => {
                println!("{t:?} value {:?}", p.value(x).map_err(|e| e.to_string()));
                println!("  derivs {:?}", p.objective_derivatives(x).map_err(|e| e.to_string()));
                println!("  all {:?}", p.derivatives(x).map(|d| d.observables).map_err(|e| e.to_string()));
                println!("  warnings {:?}", p.warnings().iter().map(|w| w.to_string()).collect::<Vec<_>>());
            }
            Err(e) => println!("{t:?} ERR {e}"),
        }
    };
    show("var x\nminimize x^2.5", &[0.0]);
    show("var x\nminimize x^0.5", &[0.0]);
    show("var x\nminimize sqrt(x)", &[0.0]);
    show("var x\nminimize tanh(x)", &[20.0]);
    show("var x\nminimize tanh(x)", &[400.0]);
    show("var x\nminimize x", &[1e200]);
    show("var x\nminimize x\nobserve exp = x", &[1.0]);
    show("var x\nminimize x\nobserve x = x^2", &[1.0]);
    show("var x\nminimize x^0", &[2.0]);
    show("var x\nminimize (x + 1)^0.5", &[-2.0]);
    show("var x\nlet r = x^2\nlet s = r\nminimize x + abs(x)", &[0.0]);
    show("var x\nminimize log(x)", &[-1.0]);
    show("var x, y\nminimize x\nnoise cov [[1, x], [2*x, 1]]", &[0.5, 0.0]);
    show("var x, y\nminimize x\nnoise cov [[1, x], [x, 1]]", &[2.0, 0.0]);
    show(&format!("var x\nminimize {}x", "- ".repeat(100000)), &[3.0]);
    show("var x\nminimize exp*x", &[1.0]);
    show("var x\nlet r = r + x\nminimize r", &[1.0]);
    show("var x = 1, y = x\nminimize r", &[1.0]);
    show("var x\nminimize x\nnoise sd 1/0", &[1.0]);
    show("param a = log(0)\nvar x\nminimize x", &[1.0]);
    show("var x\nminimize x\nnoise diag [-1]", &[1.0]);
    show("var x\nminimize x\nnoise diag [x]", &[-1.0]);
    show("var x\nminimize x\nminimize x", &[1.0]);
    show("var x\nminimize x\nnoise sd 1\nnoise sd 2", &[1.0]);
    show("var x\nminimize x\nnoise sd 1\nnoise sd 2", &[1.0]);
    show("var x; minimize x*a; param a = 1", &[1.0]);
    show("var x\nminimize x\nnoise diag [1, 2]", &[1.0]);
    show("var x, y\nminimize x\nnoise cov [[1, 0], [0]]", &[1.0, 0.0]);
    show("var x\nminimize pow(x)", &[1.0]);
    show("var x\nminimize exp(x, 2)", &[1.0]);
    show("var x\nminimize x + mean(x, 2)", &[1.0]);
    show("param exp = 1\nvar x\nminimize x", &[1.0]);
    show("var pi\nminimize pi", &[1.0]);
    show("var x\nvar x\nminimize x", &[1.0]);
    show("param lambda = 1; var x; minimize lamda*x", &[1.0]);
}
