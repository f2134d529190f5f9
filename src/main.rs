fn main() {
    println!("vitcore: under construction");
}
